"""Reports: the terminal table, and (later) HTML pages."""
