"""The generic transaction machinery: durable replacement, journal, changeset, engine, recovery."""
