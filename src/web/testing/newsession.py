"""Create a session with the autonomous example workflow; prints the user's sessions."""

import json

from common import call, example, parser

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--workflow", default="autonomous", choices=["autonomous", "sequential", "groupchat"])
    args = p.parse_args()
    session = {"user_id": args.user_id, "flow_config": example(args.workflow)}
    result = call(args.url, "/api/sessions", {"user_id": args.user_id, "session": session})
    print(result["message"])
    for s in result["data"]:
        print(
            json.dumps(
                {
                    "session_id": s["session_id"],
                    "workflow": s["flow_config"]["name"],
                    "created": s["timestamp"],
                }
            )
        )
