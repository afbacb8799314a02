"""Operator tools over the event log: trace, index, gc, scoreboard, quarantine, replay."""
