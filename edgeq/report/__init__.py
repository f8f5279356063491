"""Reports: JSON is the source of truth; Markdown and HTML (with charts) render it."""
