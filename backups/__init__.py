"""Backup and restore of the Cashloop database: online copies, rotation, encryption, checked restore."""
