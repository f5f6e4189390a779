"""`claude-bridge doctor`: what stands between a client and a working proxy, checked.

- `report.examine`: the settings, each upstream, the port, the auth token, the installed Claude
  Code and its environment, one `checks.Check` each (`checks.py`, `upstreams.py`);
- `grid.run_grid` (`doctor --claude`): the installed Claude Code through this proxy, feature by
  feature, against the scripted upstream of `scripted.py`.
"""
