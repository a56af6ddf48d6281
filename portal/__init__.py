"""Mediaflow Portal: log in to Mediaflow with OAuth 2.0 and keep the tokens alive on the server."""
