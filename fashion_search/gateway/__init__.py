"""HTTP gateway: the public /v1 API and the search page."""
