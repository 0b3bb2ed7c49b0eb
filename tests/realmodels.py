"""Fixtures for the real models of the catalog (pulled once into the checkout's models/, never committed)."""
