"""Files: saving and loading a model's loss, safe loading (this package's files and SB3's own),
plain-data descriptions of objects, and configuration files."""
