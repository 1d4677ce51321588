"""decode -> sample -> detect -> crop -> classify -> aggregate, with pluggable runtimes."""
