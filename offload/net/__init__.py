"""Outbound network access: the one HTTP helper, downloads of user-supplied URLs, and the address policy
that keeps both away from private, link-local and metadata addresses."""
