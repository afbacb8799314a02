"""Test support code: real servers the tests start on loopback (S3, ...)."""
