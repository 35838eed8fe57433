"""Senders: one port, several providers picked by a setting."""
