"""Logto to Kafka (issue 14, in progress): what turns a Logto webhook into the event record
hookrelay consumes. ``records``: the record's value (the body without ``hookId``, every other
byte kept) and its key (the entity the event is about). ``endpoint``: the HTTP route of each
source, checking media type, size and Logto's signature, answering 2xx only once written.
``writer``: the idempotent ``acks=all`` producer behind it.
"""
