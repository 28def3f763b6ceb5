"""Daemon bases (consumer, periodic, leader-only) and built-in daemons run by the DaemonManager."""
