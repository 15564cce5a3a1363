"""Faust's README, third program: an agent that handles orders and awaits an email per order.

Only the import is changed. The values of the ``orders`` topic are JSON ``Order`` records
(``amount`` defaults to 1.0); for each one the agent computes the total price and awaits
``send_order_received_email``, here a stand-in that prints what it would send. Run it::

    flowgraph run examples/faust_order_agent.py --create-topics      # on Kafka at localhost:9092
    flowgraph explain examples/faust_order_agent.py
    flowgraph run examples/faust_order_agent.py --broker memory:// \\
        --input orders=orders.jsonl                                  # one JSON order per line
"""

# The code below is Faust's README verbatim (only the import differs): left unformatted.
# fmt: off
# ruff: noqa: F841 - the snippet's total_price is unused, as in Faust's README
import flowgraph as faust

# Not part of the original snippet, which uses the app of the README's first program.
app = faust.App('myapp', broker='kafka://localhost')


# Not part of the original snippet, which leaves this function to the reader.
async def send_order_received_email(account_id, order):
    print(f'email to {account_id}: order of {order.amount} x {order.product_id} received')


class Order(faust.Record):
    account_id: str
    product_id: str
    price: float
    amount: float = 1.0

orders_topic = app.topic('orders', key_type=str, value_type=Order)

@app.agent(orders_topic)
async def process_order(orders):
    async for order in orders:
        total_price = order.price * order.amount
        await send_order_received_email(order.account_id, order)
