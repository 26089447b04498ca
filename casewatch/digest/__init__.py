"""The supervisors' daily digest: built from the store (query), as pure data (build), rendered for
email and the team channel (render), and queued through the outbox (send)."""
