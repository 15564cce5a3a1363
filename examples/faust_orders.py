"""Faust's README, first program: an agent that prints every order, with only the import changed.

The agent declares no topic, so it reads one of its own, ``myapp-order``; its values are JSON
``Order`` records (``{"account_id": "3fae-...", "amount": 3}``). The app names its broker,
``kafka://localhost`` (port 9092, as in Faust), which the ``flowgraph`` command uses unless
``--broker`` says otherwise::

    flowgraph run examples/faust_orders.py --create-topics      # on Kafka at localhost:9092
    flowgraph explain examples/faust_orders.py
    flowgraph run examples/faust_orders.py --broker memory:// \\
        --input myapp-order=orders.jsonl                        # one JSON order per line
"""

# The code below is Faust's README verbatim (only the import differs): left unformatted.
# fmt: off
import flowgraph as faust

app = faust.App('myapp', broker='kafka://localhost')

# Models describe how messages are serialized:
# {"account_id": "3fae-...", amount": 3}
class Order(faust.Record):
    account_id: str
    amount: int

@app.agent(value_type=Order)
async def order(orders):
    async for order in orders:
        # process infinite stream of orders.
        print(f'Order for {order.account_id}: {order.amount}')
