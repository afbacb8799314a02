"""Scanning engines, one module each, behind scanner.engines.base.Engine."""
