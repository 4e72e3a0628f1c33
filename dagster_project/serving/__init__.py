"""Real-time serving: the event intake and the recommendation service (`serving.app`)."""
