"""Rendering of borrower messages: templates, filters, SMS segments, lint and preview."""
