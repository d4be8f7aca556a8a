"""The gateway's read-only web status page and Prometheus ``/metrics`` (docs/gateway.md).

state.py     what the web threads read: the runner's latest status, the live view
app.py       the routes (bottle): pages, JSON API, /metrics, static files; GET only
metrics.py   the Prometheus collector, reading the state at scrape time
server.py    a threaded wsgiref server in a daemon thread, started and stopped by the runner
snapshot.py  the page as one offline HTML file with its data embedded (the demo's report)
static/      our HTML, CSS and JS; vendor/ holds uPlot (tools/fetch_web_assets.py)
"""
