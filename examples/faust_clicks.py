"""Faust's README, second program: clicks counted per URL in a table, only the import changed.

Each record of the ``clicks`` topic has a URL as its key and a click count (JSON) as its
value; the agent adds it to the ``click_counts`` table, which lives in a store per partition
and is made durable by the changelog topic ``myapp-click_counts-changelog``. Run it::

    flowgraph run examples/faust_clicks.py --create-topics   # on Kafka at localhost:9092
    flowgraph explain examples/faust_clicks.py
    flowgraph run examples/faust_clicks.py --broker memory:// \\
        --input clicks=clicks.jsonl --input-format records   # {"key": "http://...", "value": 1}
"""

# The code below is Faust's README verbatim (only the import differs): left unformatted.
# fmt: off
import flowgraph as faust

# Not part of the original snippet, which uses the app of the README's first program.
app = faust.App('myapp', broker='kafka://localhost')

# data sent to 'clicks' topic sharded by URL key.
# e.g. key="http://example.com" value="1"
click_topic = app.topic('clicks', key_type=str, value_type=int)

# default value for missing URL will be 0 with `default=int`
counts = app.Table('click_counts', default=int)

@app.agent(click_topic)
async def count_click(clicks):
    async for url, count in clicks.items():
        counts[url] += count
