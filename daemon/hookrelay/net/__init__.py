"""How hookrelay may open connections: the SSRF guard (which addresses webhooks may reach)
and the TLS contexts built from certificate and key files, for Kafka and for endpoints.
"""
