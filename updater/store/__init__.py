"""What is kept on disk: the SQLite state file, the journal of replacements and the history."""
