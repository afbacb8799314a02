"""The scanner role: reads MessageReceived, runs every enabled engine, produces MessageScanned."""
