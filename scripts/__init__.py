"""Operator and developer entry points; a package so that ``python -m scripts.<module>`` imports this tree."""
