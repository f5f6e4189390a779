"""Web search backends for the `web_search` server tool (`[web_search]` in the config).

Each backend is one module that says how to ask its API (`request`) and how to read its answer
(`results`); `searcher.Searcher` makes the one HTTP call, only ever to the configured address.
"""
