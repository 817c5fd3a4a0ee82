"""Delete one message of a session; prints the messages that remain."""

from common import call, parser

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("session_id")
    p.add_argument("msg_id")
    args = p.parse_args()
    body = {"user_id": args.user_id, "msg_id": args.msg_id, "session_id": args.session_id}
    result = call(args.url, "/api/messages/delete", body)
    print(result["message"])
    for msg in result["data"]:
        print(f"{msg['msg_id']} [{msg['role']}] {msg['content']}")
