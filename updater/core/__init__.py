"""The pure core: values, rules and decisions, with no I/O (no engine, registry, database,
notification or YAML library)."""
