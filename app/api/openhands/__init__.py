"""OpenHands agent-server compatibility: event shapes, ConversationInfo, the
start request and the WebSocket (docs/openhands.md)."""
