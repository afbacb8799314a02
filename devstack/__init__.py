"""The local stack that ``mxgate up`` and the tests start: Kafka, clamd, S3, spamd, rspamd."""
