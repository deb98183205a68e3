"""The conversation console in the browser (docs/console.md)."""
