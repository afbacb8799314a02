"""The deliverer role: carries out deliver/tag decisions over SMTP and records every attempt."""
