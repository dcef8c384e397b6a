"""The hostile corpus: every case in ``tests/hostile/`` against a real node root, real CLI.

Each case (a JSON file, format in ``tests/hostile/README.md``) names a node
(fresh or installed), a document on stdin (a patch of a valid one, or raw
segments for what JSON cannot hold: bad UTF-8, duplicate keys, 16 MiB) and a
filesystem set-up (symlinks, directories, FIFOs at targets; read-only or full
tmpfs mounts). Every case must hold the output contract (no traceback, a
documented exit code, valid JSON log lines, one short one-line message, no
secret) and then its expectation: its exit code, its message, and the node
root and everything beside it exactly as before — except what the transaction makes
inevitable (see :func:`allowed_changes`). A case with a ``deviation`` is a
known difference from the docs: it is ``xfail(strict=True)`` for the expectation
only, never for the output contract.

Then a ``hypothesis`` test runs the installed ``node-daemon-setup`` alias on
documents derived from a valid one, and checks that the node ends with
exactly its old files or exactly the new ones.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    CLUSTER,
    Entry,
    Run,
    copy_root,
    encode,
    make_document,
    parse_run,
    require_root,
    run_txsetup,
    snapshot,
    state_dir_leftovers,
    tmpfs,
)
from txsetup.demo.certs import generate_node_certificate, split_pem
from txsetup.errors import InvalidInput
from txsetup.node.files import ssconf_content
from txsetup.node.ganeti_fields import SSCONF_KEYS
from txsetup.node.payload import decode_node_daemon_setup

CASES_DIR = Path(__file__).parent / "hostile"
DOCUMENTED_EXITS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8})
NODE = "node1.example.com"
GANETI = "var/lib/ganeti"
MAX_MESSAGE = 16 * 1024  # a message stays readable: decode shows 100 problems at most
MAX_STDERR = 64 * 1024


class SpecDeviation(AssertionError):
    """The run kept the output contract but not its case's expectation (exit, files)."""


def expect(condition: bool, message: str) -> None:
    """Check a case's expectation; only these failures may be a known deviation."""
    if not condition:
        raise SpecDeviation(message)


def load_cases() -> list[Any]:
    """Every case file as a pytest param; a ``deviation`` makes it a strict xfail."""
    params = []
    for path in sorted(CASES_DIR.glob("*.json")):
        case = json.loads(path.read_text())
        marks = []
        if "deviation" in case:
            marks.append(
                pytest.mark.xfail(strict=True, raises=SpecDeviation, reason=case["deviation"])
            )
        params.append(pytest.param(case, id=path.stem, marks=marks))
    return params


# --- the documents ----------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """The valid documents and the PEM texts cases refer to by placeholder."""

    strings: Mapping[str, str]  # @NAME@ -> text
    old: dict[str, Any]  # what an installed node was set up with
    new: dict[str, Any]  # the valid document a case starts from

    def texts(self) -> dict[str, str]:
        """Placeholders that stand for JSON text, not string content."""
        return {"@DOC@": json.dumps(self.new), "@SSCONF@": json.dumps(self.new["ssconf"])}


def _encrypted(pem: str) -> str:
    key_block, cert_block = split_pem(pem)
    key = serialization.load_pem_private_key(key_block.encode(), password=None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return locked.decode() + cert_block


@pytest.fixture(scope="session")
def material(node_pem: str, other_pem: str) -> Material:
    """Placeholder values: this cluster's PEM and its halves, and the wrong ones."""
    now = datetime.now(UTC)
    key, cert = split_pem(node_pem)
    other_key, _ = split_pem(other_pem)
    rsa_key, rsa_cert = split_pem(generate_node_certificate(CLUSTER, key_type="rsa"))
    strings = {
        "@CLUSTER@": CLUSTER,
        "@PEM@": node_pem,
        "@KEY@": key,
        "@CERT@": cert,
        "@OTHER_PEM@": other_pem,
        "@OTHER_KEY@": other_key,
        "@RSA_KEY@": rsa_key,
        "@RSA_CERT@": rsa_cert,
        "@ENCRYPTED_PEM@": _encrypted(node_pem),
        "@EXPIRED_PEM@": generate_node_certificate(
            CLUSTER, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
        ),
        "@FUTURE_PEM@": generate_node_certificate(
            CLUSTER, not_before=now + timedelta(days=1), not_after=now + timedelta(days=10)
        ),
    }
    old = make_document(node_pem, hmac_key="hmac-secret-old", node_name=NODE)
    new = make_document(
        node_pem, hmac_key="hmac-secret-new", node_name=NODE, ssconf={"master_ip": "192.0.2.99"}
    )
    return Material(strings, old, new)


def expand(value: Any, strings: Mapping[str, str]) -> Any:
    """A patch value with placeholders filled in and ``{"$repeat": s, "times": n}`` expanded."""
    if isinstance(value, str):
        for name, text in strings.items():
            value = value.replace(name, text)
        return value
    if isinstance(value, list):
        return [expand(item, strings) for item in value]
    if isinstance(value, dict):
        if "$repeat" in value:
            return str(value["$repeat"]) * int(value["times"])
        return {key: expand(item, strings) for key, item in value.items()}
    return value


def _pointer(pointer: str) -> list[str]:
    """RFC 6901: ``/ssconf/a~1b`` is ``["ssconf", "a/b"]``."""
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]


def patched(document: dict[str, Any], patch: Mapping[str, Any], material: Material) -> bytes:
    """``document`` with ``patch``'s ``set`` and ``delete`` applied, as stdin bytes."""
    result = copy.deepcopy(document)
    for pointer, value in patch.get("set", {}).items():
        *parents, last = _pointer(pointer)
        target = result
        for part in parents:
            target = target[part]
        target[last] = expand(value, material.strings)
    for pointer in patch.get("delete", []):
        *parents, last = _pointer(pointer)
        target = result
        for part in parents:
            target = target[part]
        del target[last]
    return encode(result)


def rendered(spec: Mapping[str, Any], material: Material) -> bytes:
    """Raw segments: each text (placeholders as JSON string content) repeated ``times``."""
    escaped = {name: json.dumps(text)[1:-1] for name, text in material.strings.items()}
    parts: list[str] = []
    for template, times in spec["segments"]:
        text = template
        for name, value in {**material.texts(), **escaped}.items():
            text = text.replace(name, value)
        if "@N@" in text:
            parts.extend(text.replace("@N@", str(n)) for n in range(times))
        else:
            parts.append(text * times)
    data = "".join(parts).encode(spec.get("encoding", "utf-8"))
    if "pad_to" in spec:
        assert len(data) <= spec["pad_to"]
        data += b" " * (spec["pad_to"] - len(data))
    return data


def stdin_of(case: Mapping[str, Any], material: Material) -> bytes:
    """The bytes a case sends on stdin."""
    spec = case["stdin"]
    if "patch" in spec:
        return patched(material.new, spec["patch"], material)
    return rendered(spec, material)


# --- the node ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def installed_template(tmp_path_factory: pytest.TempPathFactory, material: Material) -> Path:
    """A node with every target present (ssconf, server.pem, hmac.key, client.pem)."""
    root = tmp_path_factory.mktemp("hostile-template") / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()
    run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=encode(material.old))
    assert run.returncode == 0, run.stderr
    return root


def fresh_root(root: Path) -> None:
    """A node root as a fresh node has it (as the ``root`` fixture makes it)."""
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").mkdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _fill(directory: Path) -> None:
    """Write a filler file until the filesystem has no byte left."""
    with (directory / "filler").open("wb", buffering=0) as filler:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            try:
                while True:
                    filler.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def _mount_tmpfs(path: Path, op: Mapping[str, Any], stack: ExitStack) -> None:
    """Put ``path``'s contents on a fresh tmpfs mounted there; fill it or make it read-only."""
    require_root("mounting a tmpfs (read-only or full filesystem cases)")
    save = path.parent / f"{path.name}.hostile-save"
    subprocess.run(["cp", "-a", str(path), str(save)], check=True)
    stack.enter_context(tmpfs(path, op.get("size", "1m")))
    subprocess.run(["cp", "-a", f"{save}/.", str(path)], check=True)
    shutil.rmtree(save)
    if op.get("fill"):
        _fill(path)
    if op.get("readonly"):
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def set_up(root: Path, outside: Path, ops: list[Mapping[str, Any]], stack: ExitStack) -> None:
    """Apply a case's filesystem operations (paths relative to root, or ``@OUTSIDE@/...``)."""

    def where(text: str) -> Path:
        if text.startswith("@OUTSIDE@"):
            return outside / text.removeprefix("@OUTSIDE@/")
        return root if text == "." else root / text

    for op in ops:
        path = where(op["path"])
        kind = op["op"]
        if kind == "tmpfs":
            _mount_tmpfs(path, op, stack)
            continue
        if kind == "move":
            os.rename(path, where(op["to"]))
            continue
        _remove(path)
        if kind == "symlink":
            path.symlink_to(where(op["to"]))
        elif kind == "mkdir":
            path.mkdir()
            if not op.get("empty"):
                (path / "keep").write_text("keep\n")
        elif kind == "mkfifo":
            os.mkfifo(path, 0o644)
        elif kind == "write":
            path.write_text(op["text"])
        else:
            raise AssertionError(f"unknown filesystem op {kind!r}")


# --- the checks -------------------------------------------------------------------------


def changed_paths(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> set[str]:
    """Paths that appeared, disappeared or differ."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def allowed_changes(before: Mapping[str, Entry], after: Mapping[str, Entry], code: int) -> set[str]:
    """What the transaction makes inevitable for a run that ends with ``code``.

    Any run: the ``lock`` step comes before ``decode``, and taking the
    lock creates ``var/lock/txsetup.lock`` and the state directory when a fresh
    node has none; an existing lock file or journal must stay as it was.
    Exit 6: staging had begun, so the journal records it and its rollback
    (every state change is journaled before the action), and commit may
    have created Ganeti's ssconf lock. Exit 0: the commit's kept set too
    (``txsetup revert``), what it replaced and nothing else. Nothing else, ever.
    """
    allowed = {
        path
        for path, kind in (("var/lock/txsetup.lock", "file"), ("var/lib/txsetup", "dir"))
        if path not in before and path in after and after[path].kind == kind
    }
    if code == 0:
        kept = {p for p in after if p.startswith("var/lib/txsetup/") and p.endswith(".revert")}
        allowed |= kept | {"var/lib/txsetup/revertable"}
    if code in (0, 6):
        allowed |= {"var/lib/txsetup/journal"}
        if "var/lock/ganeti-ssconf.lock" not in before:
            allowed.add("var/lock/ganeti-ssconf.lock")
    return allowed


def committed_files(
    stdin: bytes, before: Mapping[str, Entry]
) -> dict[str, tuple[bytes | None, int]]:
    """The (content, mode) of each file the accepted document installs (client.pem: any key)."""
    setup = decode_node_daemon_setup(stdin)
    wanted: dict[str, tuple[bytes | None, int]] = {
        f"{GANETI}/ssconf_{key}": (ssconf_content(value), 0o444)
        for key, value in setup.ssconf.items()
    }
    wanted[f"{GANETI}/server.pem"] = (setup.node_daemon_certificate.encode(), 0o440)
    if setup.hmac_key is not None:
        wanted[f"{GANETI}/hmac.key"] = (setup.hmac_key.encode(), 0o440)
    if setup.node_name is not None:
        wanted[f"{GANETI}/client.pem"] = (None, 0o440)
    if GANETI not in before:
        wanted[GANETI] = (None, -1)
    return wanted


@pytest.fixture(scope="session")
def plain_run_seconds(tmp_path_factory: pytest.TempPathFactory, material: Material) -> float:
    """How long a plain run (the valid document, dry run) takes on this machine, now.

    A bomb's ``max_seconds`` is a bound for a machine where that is a second
    or less: on a slower or busier one the bound grows with it, so the check
    catches a blow-up in the input, never a slow machine.
    """
    root = tmp_path_factory.mktemp("hostile-reference") / "root"
    fresh_root(root)
    started = time.monotonic()
    run = run_txsetup(
        ["node-daemon-setup", "--dry-run", "--root", str(root)], stdin=encode(material.new)
    )
    assert run.returncode == 0, run.stderr
    return time.monotonic() - started


def check_output_contract(run: Run, elapsed: float, max_seconds: float | None) -> None:
    """What every run owes its caller, whatever the input (never a known deviation).

    ``max_seconds`` is already scaled to this machine (:func:`plain_run_seconds`).
    """
    assert run.returncode in DOCUMENTED_EXITS, run.returncode
    assert len(run.stderr) < MAX_STDERR, f"stderr of {len(run.stderr)} characters"
    assert run.events, "no log line"
    assert run.events[-1]["event"] == "txn.end"
    if run.returncode != 0:
        messages = [run.result["error"]] + [e["error"] for e in run.events if "error" in e]
        for message in messages:
            assert isinstance(message, str)
            assert message.strip(), "empty error message"
            assert len(message) < MAX_MESSAGE, f"message of {len(message)} characters"
            controls = [c for c in message if ord(c) < 0x20 or ord(c) == 0x7F]
            assert not controls, f"raw control characters in {message!r}"
    if max_seconds is not None:
        assert elapsed < max_seconds, f"took {elapsed:.1f}s, more than {max_seconds}s"


@pytest.mark.parametrize("case", load_cases())
def test_hostile_case(
    case: dict[str, Any],
    material: Material,
    installed_template: Path,
    plain_run_seconds: float,
    tmp_path: Path,
) -> None:
    """A hostile case keeps the output contract, exits as documented, and changes nothing."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "decoy").write_text("outside --root: never written\n")
    if case["node"] == "installed":
        copy_root(installed_template, root)
    else:
        fresh_root(root)
    stdin = stdin_of(case, material)
    with ExitStack() as mounts:
        set_up(root, outside, case.get("filesystem", []), mounts)
        before, beside = snapshot(root, skip=()), snapshot(tmp_path, skip=("root",))
        started = time.monotonic()
        run = run_txsetup(["node-daemon-setup", "--root", str(root)], stdin=stdin)
        elapsed = time.monotonic() - started
        after, beside_after = snapshot(root, skip=()), snapshot(tmp_path, skip=("root",))
        leftovers = state_dir_leftovers(root)

    want = case["expect"]
    bound = want.get("max_seconds")
    check_output_contract(run, elapsed, bound * max(1.0, plain_run_seconds) if bound else None)
    expect(
        run.returncode == want["exit"],
        f"exit {run.returncode}, expected {want['exit']}: {run.result.get('error')}",
    )
    if "error" in want:
        expect(want["error"] in run.result["error"], f"message: {run.result['error']!r}")
    expect(beside_after == beside, f"changed outside --root: {changed_paths(beside, beside_after)}")
    expect(leftovers == [], f"staged or hold copies left: {leftovers}")
    changed = changed_paths(before, after) - allowed_changes(before, after, run.returncode)
    if want.get("files") == "committed":
        wanted = committed_files(stdin, before)
        for path, (content, mode) in wanted.items():
            if mode == -1:
                continue
            assert after[path].kind == "file", path
            assert after[path].mode == mode, path
            assert content is None or after[path].content == content, path
        changed -= wanted.keys()
    expect(not changed, f"changed under --root: {sorted(changed)}")


def test_corpus_is_large_and_documented() -> None:
    """The corpus holds at least 60 cases, each described, and its README names every field."""
    cases = [json.loads(p.read_text()) for p in CASES_DIR.glob("*.json")]
    assert len(cases) >= 60
    assert all(case["about"] and case["node"] in ("fresh", "installed") for case in cases)
    readme = (CASES_DIR / "README.md").read_text()
    for word in ("about", "node", "stdin", "patch", "segments", "filesystem", "expect"):
        assert f"`{word}`" in readme, word


# --- property: random documents through the whole CLI -----------------------------------


def alias_exe() -> str:
    """The installed ``node-daemon-setup`` console script (what a Ganeti master runs)."""
    exe = Path(sys.executable).with_name("node-daemon-setup")
    found = str(exe) if exe.exists() else shutil.which("node-daemon-setup")
    assert found, "node-daemon-setup console script is not installed"
    return found


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Small arrays and objects of ``children``."""
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=6), children, max_size=3
    )


json_values = st.recursive(json_leaves, json_containers, max_leaves=8)
odd_keys = st.sampled_from(
    [
        "../../x",
        "master_ip\x00",
        "",
        "__proto__",
        "ssconf_x",
        "MASTER_IP",
        "cluster_tags",
        "uid_pool",
    ]
) | st.text(max_size=10)
TOP_KEYS = (
    "cluster_name",
    "node_daemon_certificate",
    "ssconf",
    "start_node_daemon",
    "hmac_key",
    "node_name",
)


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """One to three edits of a valid document: (where, key, edit)."""
    edits = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "ssconf"]))
        key = draw(
            st.sampled_from(TOP_KEYS) if where == "top" else st.sampled_from(sorted(SSCONF_KEYS))
        )
        edit = draw(
            st.one_of(
                st.just(("drop",)),
                st.tuples(st.just("replace"), json_values),
                st.tuples(st.just("mutate"), st.integers(0, 200), st.text(max_size=4)),
                st.tuples(st.just("truncate"), st.integers(0, 300)),
                st.tuples(st.just("insert"), odd_keys, json_values),
            )
        )
        edits.append((where, key, edit))
    return edits


def mutated(document: dict[str, Any], edits: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Apply edits to a copy; never ask for a daemon restart (no daemon on a test node)."""
    result = copy.deepcopy(document)
    for where, key, edit in edits:
        target = result if where == "top" else result.get("ssconf")
        if not isinstance(target, dict):
            continue
        if edit[0] == "drop":
            target.pop(key, None)
        elif edit[0] == "replace":
            target[key] = edit[1]
        elif edit[0] == "insert":
            target[edit[1]] = edit[2]
        elif isinstance(target.get(key), str):
            text = target[key]
            if edit[0] == "mutate":
                at = min(edit[1], len(text))
                target[key] = text[:at] + edit[2] + text[at:]
            else:
                target[key] = text[: edit[1]]
    if result.get("start_node_daemon") is True:
        result["start_node_daemon"] = False
    return result


def node_files(root: Path) -> dict[str, Entry]:
    """The node's files (ganeti's), for old-or-new comparisons."""
    return {k: v for k, v in snapshot(root).items() if k == GANETI or k.startswith(GANETI + "/")}


def exactly_new(before: Mapping[str, Entry], after: Mapping[str, Entry], stdin: bytes) -> bool:
    """The node holds the document's files (bytes, modes) and every other file as before."""
    try:
        wanted = committed_files(stdin, before)
    except InvalidInput:
        return False
    for path, entry in after.items():
        if path in wanted:
            content, mode = wanted[path]
            if mode != -1 and (entry.kind != "file" or entry.mode != mode):
                return False
            if content is not None and entry.content != content:
                return False
        elif before.get(path) != entry:
            return False
    return set(before) <= set(after)


@pytest.fixture(scope="module")
def property_nodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the property test's node roots (one per example)."""
    return tmp_path_factory.mktemp("hostile-property")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=mutations())
# A random run once found this one: the refusal quoted the PEM label of the key
# ("truncated PEM block 'PRIVATE KEY'"), which the secret check rightly refuses.
@example(edits=[("top", "node_daemon_certificate", ("truncate", 27))])
def test_random_documents_leave_old_or_new_files(
    edits: list[tuple[str, str, Any]],
    material: Material,
    installed_template: Path,
    property_nodes: Path,
) -> None:
    """Any document derived from a valid one: a documented exit code, no traceback, and the
    node holds exactly its old files or exactly the document's."""
    root = property_nodes / f"node-{time.monotonic_ns()}"
    copy_root(installed_template, root)
    stdin = encode(mutated(material.new, edits))
    before = node_files(root)
    proc = subprocess.run(
        [alias_exe(), "--root", str(root)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    run = parse_run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    check_output_contract(run, 0.0, None)
    event(f"exit {run.returncode}")
    after = node_files(root)
    if run.returncode == 0:
        assert exactly_new(before, after, stdin), "exit 0 but not exactly the new files"
    else:
        assert after == before, f"exit {run.returncode} but files changed"
    assert state_dir_leftovers(root) == []
    shutil.rmtree(root)


def test_property_tests_are_reproducible_unless_asked_for_a_random_run(
    request: pytest.FixtureRequest,
) -> None:
    """The suite's property tests are derandomized; the ``matrix`` profile alone is random."""
    random_run = request.config.getoption("hypothesis_profile", None) == "matrix"
    active = settings.default
    assert active is not None
    assert active.derandomize is not random_run
    assert active.deadline is None
