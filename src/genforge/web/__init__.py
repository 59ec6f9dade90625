"""genforge studio: a local web app over the application layer (``genforge.api``) and the toy lab.

The server holds no ML code: every route reads run folders or calls ``genforge.api`` /
``genforge.lab``; the page is static HTML/CSS/JS shipped in ``static/`` (no build step, no CDN).
"""
