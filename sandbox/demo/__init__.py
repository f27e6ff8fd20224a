"""Deterministic synthetic demo data for the fictional city of Harbor City."""

from sandbox.demo._generate import generate_demo_data

__all__ = ["generate_demo_data"]
