"""Thin command modules; each exposes register(app) and imports heavy things (torch) inside the command body."""
