"""Examples that need a configuration, a document or a root of their own, each on a fresh root.

- an unfinished transaction: a run whose daemon restart command kills
  ``txsetup`` itself (``kill -9`` of its parent), then ``txsetup status``
  (``status-unfinished``) and ``--resume`` with a restart that works
  (``console-resume``);
- ``txsetup status`` on a root whose journal is a directory, so that it
  cannot be read (``status-unreadable``, exit 1);
- a configuration file with two mistakes, an unknown key and a command that
  is not all strings (``config-invalid``: the run refuses it, exit 3);
- ``ssh-setup`` with an ``[sshd]`` table that needs no sshd (reload ``true``,
  no health check) and keys made by ``txsetup``'s own key generation, so that
  the result shows a real ``root_public_keys`` (``ssh-setup-committed``).

No daemon runs and nothing leaves the temporary directory; every run takes
well under a second.
"""

from __future__ import annotations

from pathlib import Path

from txsetup.demo.__main__ import CLUSTER
from txsetup.node.sshkeys import generate_key_pair
from txsetup_docs.runs import Example, result, run, shown

# No health check: the restart commands' exit status is the evidence. Nothing to stop.
_NO_HEALTH = 'stop = [["true"]]\nhealth_url = "none"\n'
# The restart kills txsetup (its parent) after the commit: the transaction stays unfinished.
_KILLING = f'[daemon]\nrestart = [["sh", "-c", "kill -9 $PPID"]]\nstatus = ["false"]\n{_NO_HEALTH}'
_WORKING = f'[daemon]\nrestart = [["true"]]\nstatus = ["true"]\n{_NO_HEALTH}'
# Two mistakes in one file: both are reported, each naming its key.
_INVALID = '[daemon]\nrestrat = [["true"]]\nrestart = [["true"], [1]]\n'
# sshd "reloaded" by `true` and healthy when `true` exits 0: the run needs no sshd.
_NO_SSHD = '[sshd]\nreload = [["true"]]\nstatus = ["true"]\nhealth_address = "none"\n'


def configured_examples(base: Path, document: dict[str, object]) -> dict[str, Example]:
    """Every example of this module, under ``base``; ``document`` is a valid payload."""
    return {
        **_unfinished(base / "unfinished", {**document, "start_node_daemon": True}),
        **_invalid_config(base / "invalid", document),
        **_unreadable_journal(base / "unreadable"),
        **_ssh_setup(base / "ssh"),
    }


def _unfinished(base: Path, document: dict[str, object]) -> dict[str, Example]:
    killing, working = base / "killing.toml", base / "working.toml"
    base.mkdir(parents=True)
    killing.write_text(_KILLING)
    working.write_text(_WORKING)
    root = base / "node"
    killed = run(root, ["node-daemon-setup", "--config", str(killing)], document)
    if killed.returncode != -9:
        raise RuntimeError(f"the killing restart did not kill txsetup: {killed.stderr}")
    status = run(root, ["status"], None)
    resume = ["node-daemon-setup", "--resume", "--log-format", "console"]
    resumed = run(root, [*resume, "--config", str(working)], None)
    return {
        "status-unfinished": Example(
            "txsetup status", status.returncode, result(status.stdout, root), "stdout"
        ),
        "console-resume": Example(
            "txsetup node-daemon-setup --resume --config working.toml",
            resumed.returncode,
            shown(resumed.stderr, root),
            "console",
        ),
    }


def _invalid_config(root: Path, document: dict[str, object]) -> dict[str, Example]:
    config = root / "etc" / "txsetup" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(_INVALID)
    refused = run(root, ["node-daemon-setup"], document)
    return {
        "config-invalid": Example(
            "txsetup node-daemon-setup < payload.json",
            refused.returncode,
            result(refused.stdout, root),
            "stdout",
        )
    }


def _unreadable_journal(root: Path) -> dict[str, Example]:
    (root / "var" / "lib" / "txsetup" / "journal").mkdir(parents=True)
    status = run(root, ["status"], None)
    return {
        "status-unreadable": Example(
            "txsetup status", status.returncode, result(status.stdout, root), "stdout"
        )
    }


def _ssh_setup(base: Path) -> dict[str, Example]:
    host_private, host_public = generate_key_pair("ed25519", None, "root@node1")
    _, master_public = generate_key_pair("ed25519", None, "root@master")
    document = {
        "cluster_name": CLUSTER,
        "ssh_host_key": [["ed25519", host_private.decode(), host_public.decode()]],
        "ssh_root_key": [],
        "authorized_keys": {"master-uuid": [master_public.decode()]},
        "ssh_key_type": "ed25519",
        "ssh_key_bits": 256,
    }
    config = base / "sshd.toml"
    base.mkdir(parents=True)
    config.write_text(_NO_SSHD)
    root = base / "node"
    done = run(root, ["ssh-setup", "--config", str(config)], document)
    return {
        "ssh-setup-committed": Example(
            "txsetup ssh-setup --config sshd.toml < ssh.json",
            done.returncode,
            result(done.stdout, root),
            "stdout",
        )
    }
