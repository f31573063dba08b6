"""The response cache: stored messages, their assembly from a stream and their replay (SPEC §5)."""
