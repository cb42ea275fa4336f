"""See inside a running Sluice: the live view (`/` of the metrics port), its JSON
(`/debug/state`, `/debug/events`), the decision receipts (`/debug/decisions`) and `sluice top`.

`snapshot` turns the director's state into one plain dict (sans-I/O, `now` passed in); `routes`
serves it over aiohttp; `top` renders it in a terminal. The page is plain HTML/CSS/JS shipped
as package data (`static/`): nothing is loaded from anywhere else.
"""
