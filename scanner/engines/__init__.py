"""Scanning engines, one module each, behind scanner.engines.common.Engine."""
