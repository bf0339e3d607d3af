"""Talk to a running sam_ros node without ros2cli: prompts, remove, reset, lifecycle.

    python -m sam_ros.ros.prompt_client segment --point 320,240 --point 40,60,0 --out mask.png
    python -m sam_ros.ros.prompt_client segment --box 100,80,400,300 --id 2
    python -m sam_ros.ros.prompt_client remove 2
    python -m sam_ros.ros.prompt_client reset
    python -m sam_ros.ros.prompt_client configure      # also: activate, deactivate,
                                                         # cleanup, shutdown, state
(`ros2 run sam_ros sam_ros_prompt ...` runs the same.) A point is x,y (pixels of the camera
image) with an optional label: 1 foreground (default), 0 background. Exit status 0 on
success, 1 when the node refused (its message is printed), 2 when it did not answer.
"""

import argparse
import sys
import time


def _floats(text, n=None):
    vals = [float(v) for v in text.split(",")]
    if n is not None and len(vals) != n:
        raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
    return vals


def _point(text):
    vals = _floats(text)
    if len(vals) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a point is x,y or x,y,label; got {text!r}")
    return vals


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="sam_ros_prompt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", default="/sam_ros", help="the node's full name (default /sam_ros)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    sub = ap.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="start or refine an object")
    seg.add_argument("--point", type=_point, action="append", default=[],
                     help="x,y[,label] (repeatable)")
    seg.add_argument("--box", type=lambda t: _floats(t, 4), help="x_min,y_min,x_max,y_max")
    seg.add_argument("--id", type=int, default=0, help="object id to refine (0: new object)")
    seg.add_argument("--stamp", default="", help="stamp of a recent frame, SEC.NANOSEC "
                     "(default: the latest frame)")
    seg.add_argument("--once", action="store_true", help="answer once, do not track")
    seg.add_argument("--label", default="", help="class name carried on the track")
    seg.add_argument("--out", help="write the mask to this PNG")
    rm = sub.add_parser("remove", help="stop tracking an object")
    rm.add_argument("object_id", type=int)
    sub.add_parser("reset", help="forget every object")
    for name in ("state", "configure", "activate", "deactivate", "cleanup", "shutdown"):
        sub.add_parser(name, help=f"lifecycle: {name}")
    return ap.parse_args(argv)


def call(node, client, request, timeout):
    """The response of one service call, spinning ``node`` (not in another executor) until
    it comes; None (and a line on stderr) when the service is missing or silent."""
    import rclpy
    if not client.wait_for_service(timeout_sec=timeout):
        print(f"no service {client.srv_name} (is the node running?)", file=sys.stderr)
        return None
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        print(f"{client.srv_name}: no answer within {timeout} s", file=sys.stderr)
        return None
    return future.result()


def change_state(node, base, command, timeout):
    """Lifecycle transition ``command`` (configure, activate, deactivate, cleanup, shutdown)
    of the node named ``base``; its ChangeState response, or None when it did not answer."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    tid = {"configure": Transition.TRANSITION_CONFIGURE,
           "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE,
           "cleanup": Transition.TRANSITION_CLEANUP,
           "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}[command]
    if command == "shutdown":  # the shutdown transition id depends on the state
        st = call(node, node.create_client(GetState, base + "/get_state"), GetState.Request(),
                  timeout)
        if st is None:
            return None
        tid = {"inactive": Transition.TRANSITION_INACTIVE_SHUTDOWN,
               "active": Transition.TRANSITION_ACTIVE_SHUTDOWN}.get(st.current_state.label, tid)
    return call(node, node.create_client(ChangeState, base + "/change_state"),
                ChangeState.Request(transition=Transition(id=tid)), timeout)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import rclpy
    from builtin_interfaces.msg import Time
    from lifecycle_msgs.srv import GetState
    from std_srvs.srv import Trigger

    from sam_ros.srv import RemoveObject, Segment

    rclpy.init()
    node = rclpy.create_node(f"sam_ros_prompt_{int(time.time() * 1000) % 100000}")
    base = args.node.rstrip("/")
    try:
        if args.command == "segment":
            req = Segment.Request()
            req.points = [float(v) for p in args.point for v in p[:2]]
            req.labels = [int(p[2]) if len(p) == 3 else 1 for p in args.point]
            req.box = args.box or []
            req.object_id = args.id
            req.once = args.once
            req.label = args.label
            req.return_mask = bool(args.out)
            if args.stamp:
                sec, _, frac = args.stamp.partition(".")
                req.stamp = Time(sec=int(sec), nanosec=int((frac or "0").ljust(9, "0")[:9]))
            res = call(node, node.create_client(Segment, base + "/segment"), req, args.timeout)
            if res is None:
                return 2
            if not res.success:
                print(f"refused: {res.message}")
                return 1
            print(f"object {res.object_id}: score {res.score:.3f} iou {res.iou:.3f} "
                  f"bbox {[int(v) for v in res.bbox]} area {res.area} px, frame "
                  f"{res.stamp.sec}.{res.stamp.nanosec:09d}"
                  + ("" if res.message == "ok" else f" ({res.message})"))
            if args.out:
                import cv2

                from sam_ros.ros.conversions import image_to_array
                cv2.imwrite(args.out, image_to_array(res.mask))
                print(f"mask written to {args.out}")
            return 0
        if args.command == "remove":
            res = call(node, node.create_client(RemoveObject, base + "/remove"),
                       RemoveObject.Request(object_id=args.object_id), args.timeout)
        elif args.command == "reset":
            res = call(node, node.create_client(Trigger, base + "/reset"), Trigger.Request(),
                       args.timeout)
        elif args.command == "state":
            res = call(node, node.create_client(GetState, base + "/get_state"),
                       GetState.Request(), args.timeout)
            if res is None:
                return 2
            print(res.current_state.label)
            return 0
        else:
            res = change_state(node, base, args.command, args.timeout)
            if res is None:
                return 2
            print(f"{args.command}: {'ok' if res.success else 'failed (see the node log)'}")
            return 0 if res.success else 1
        if res is None:
            return 2
        print(res.message)
        return 0 if res.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
