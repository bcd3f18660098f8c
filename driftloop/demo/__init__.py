"""`driftloop demo`: the staged story (phases of traffic and feedback) and its runner."""
