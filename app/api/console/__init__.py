"""The conversation console in the browser (docs/console.md): the page
(``page``) and the listing routes it reads (``listing``)."""
