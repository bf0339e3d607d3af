"""The node under test beside a client node, in an rclpy context of their own, spun by one
multi-threaded executor: what the DDS tests of the node share (each adds its publishers and
subscriptions)."""

import sys
import threading
import time
import traceback

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from sam_ros.ros.node import SamRosNode
from sam_ros.srv import RemoveObject, Segment

TIMEOUT = 30.0


class NodeHarness:
    """``SamRosNode`` with ``parameters`` (name -> value) and a client node with the node's
    lifecycle and service clients; ``domain_id`` None = ROS_DOMAIN_ID."""

    def __init__(self, parameters, domain_id=None, client_name="sam_ros_test_client"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = SamRosNode(context=self.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in parameters.items()])
        self.client = c = rclpy.create_node(client_name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(c)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.change = c.create_client(ChangeState, "/sam_ros/change_state")
        self.get_state = c.create_client(GetState, "/sam_ros/get_state")
        self.segment_cli = c.create_client(Segment, "/sam_ros/segment")
        self.remove_cli = c.create_client(RemoveObject, "/sam_ros/remove")
        self.reset_cli = c.create_client(Trigger, "/sam_ros/reset")
        self.seq = 0

    def keep(self, store):
        """A subscription callback that appends each message to ``store``."""
        def keep(msg):
            with self.lock:
                store.append(msg)
        return keep

    def call(self, client, request, timeout=TIMEOUT):
        assert client.wait_for_service(timeout_sec=timeout), client.srv_name
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{client.srv_name}: no answer in {timeout} s; "
                                     f"{self.describe()}")
            time.sleep(0.01)
        return future.result()

    def describe(self):
        """Where the node stands and what every thread is doing: what a hang or a lost
        response leaves behind to tell the two apart."""
        names = {t.ident: t.name for t in threading.enumerate()}
        stacks = "".join(f"\n--- thread {names.get(ident, ident)}\n"
                         + "".join(traceback.format_stack(frame))
                         for ident, frame in sys._current_frames().items())
        return (f"lifecycle state {self.node._state_machine.current_state}, worker "
                f"{'alive' if self.node.worker.alive else 'stopped'}, node stats "
                f"{self.node.stats}; threads:{stacks}")

    def transition(self, transition_id):
        return self.call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def state(self):
        return self.call(self.get_state, GetState.Request()).current_state.id

    def segment(self, timeout=TIMEOUT, **fields):
        return self.call(self.segment_cli, Segment.Request(**fields), timeout)

    def wait_for(self, get, what, timeout=TIMEOUT):
        """The first true value of ``get()`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = get()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; node stats {self.node.stats}")

    def close(self):
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self.client.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)
