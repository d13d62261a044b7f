"""Private implementation package; the public names are re-exported by colabkit/__init__.py."""
