"""The values that flow through the pipeline and the bytes a hook receives: the event
model, Logto's event catalogue, the record decoder, body splicing and signatures, and Logto's
test payload. Imports nothing of hookrelay but ``errors``.
"""
