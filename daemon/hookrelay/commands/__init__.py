"""The command line: ``hookrelay run|check|produce|send-test|replay|import-logto``."""
