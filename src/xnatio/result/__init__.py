"""What an upload leaves behind: the journal, the resume rule and per-file reports."""
