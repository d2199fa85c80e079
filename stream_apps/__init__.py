"""The router: a quixstreams app that fans readings out to topics by the routing rules."""
