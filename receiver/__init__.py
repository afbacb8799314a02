"""The receiver role: the SMTP front door (aiosmtpd)."""
