"""moto mended for a bus that runs for months under load.

moto is made for tests: it keeps every message it ever made, and some of its
SNS/SQS calls take time in proportion to the queue's depth (a receive reads
every queued message's attributes for each message it returns, a delete
looks for its receipt handle in every queued message). Called in the bus's
own process, before its server starts, these functions change that and
nothing of what the calls answer.

They reach into moto's internals; ``setup.cfg`` bounds moto's version, and
``tests/integration/test_embedded_bus.py`` checks their effect on it.
"""

from __future__ import annotations

import collections
import json
import string
import threading
from collections.abc import Iterable
from typing import Any

# Receipt handles of deleted messages that a queue remembers, so that a
# DeleteMessage tried again (its answer lost) succeeds instead of failing:
# the retry comes within seconds, a handful of batches later.
REMEMBERED_DELETIONS = 1000


class RecentSet:
    """A set that keeps only its ``size`` most recently added members."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._members: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: str) -> None:
        self._members[member] = None
        self._members.move_to_end(member)
        while len(self._members) > self._size:
            self._members.popitem(last=False)

    def update(self, members: Iterable[str]) -> None:
        for member in members:
            self.add(member)


def forget_what_moto_keeps() -> None:
    """Make moto keep a message only while it is queued.

    moto remembers every model object it makes in its class's
    ``instances_tracked`` (for its dashboard, which the guard refuses), every
    notification published to a topic (``Topic.sent_notifications``, for its
    own tests) and the receipt handle of every message a queue deleted; all
    three grow by each event for as long as the process lives."""
    from moto.core.common_models import BaseModel
    from moto.core.model_instances import reset_model_data
    from moto.sns.models import Topic
    from moto.sqs.models import Queue

    def untracked_new(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(untracked_new)  # type: ignore[method-assign]
    reset_model_data()

    topic_init = Topic.__init__
    queue_init = Queue.__init__

    def forgetful_topic_init(self: Topic, *args: Any, **kwargs: Any) -> None:
        topic_init(self, *args, **kwargs)
        self.sent_notifications = collections.deque(maxlen=0)  # type: ignore[assignment]

    def forgetful_queue_init(self: Queue, *args: Any, **kwargs: Any) -> None:
        queue_init(self, *args, **kwargs)
        self.deleted_messages = RecentSet(REMEMBERED_DELETIONS)  # type: ignore[assignment]

    Topic.__init__ = forgetful_topic_init  # type: ignore[method-assign]
    Queue.__init__ = forgetful_queue_init  # type: ignore[method-assign]


def answer_regardless_of_depth() -> None:
    """Make a receive, a send and a delete cost the same with 10 or 10,000
    messages queued.

    * A receive checks each message it returns against the queue's retention
      period, which moto reads by building every queue attribute, three of
      them counts over the whole queue: read the period alone.
    * The queue's visible messages: one clock reading per call, not two a
      message.
    * A send reads the queue's attributes for one flag, and moto builds them
      all, the three counts over the whole queue among them: a send builds
      them without the counts (GetQueueAttributes still has them), and on a
      standard queue, which has no such flag, builds none.
    * A delete looks for its receipt handle among the messages received and
      not yet deleted (those in flight), not all queued ones; a handle no
      message in flight has (an expired one, or a stranger's) takes moto's
      own way, which also answers it as moto would.
    * A receipt handle (185 random letters) is drawn in one call, not one
      call a letter.
    """
    _read_retention_alone()
    _count_only_when_asked()
    _delete_among_those_in_flight()
    _receipt_handles_at_once()


def _read_retention_alone() -> None:
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Message, Queue, SQSBackend

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Message
    ) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
        return bool(period + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]

    def messages(self: Queue) -> list[Message]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and now >= m.delayed_until]

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )
    Queue.messages = property(messages)  # type: ignore[assignment,method-assign]


_RECEIPT_HANDLE_LENGTH = 185

_COUNTS = frozenset(
    {
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateNumberOfMessagesNotVisible",
    }
)


def _count_only_when_asked() -> None:
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Message, Queue, SQSBackend

    uncounted = threading.local()

    def attributes(self: Queue) -> dict[str, Any]:
        """moto's own ``Queue.attributes``, without the counts during a send."""
        sending = getattr(uncounted, "on", False)
        if sending and not self.fifo_queue:
            # A send reads only ContentBasedDeduplication, which only a FIFO
            # queue has.
            return {}
        skipped = _COUNTS if sending else frozenset()
        names = [a for a in self.BASE_ATTRIBUTES if a not in skipped]
        if self.fifo_queue:
            names += self.FIFO_ATTRIBUTES
        if self.kms_master_key_id:  # type: ignore[attr-defined]
            names += self.KMS_ATTRIBUTES
        result = {name: getattr(self, camelcase_to_underscores(name)) for name in names}
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        return {k: str(v).lower() if isinstance(v, bool) else v for k, v in result.items()}

    moto_send = SQSBackend.send_message

    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Message:
        uncounted.on = True
        try:
            return moto_send(self, *args, **kwargs)
        finally:
            uncounted.on = False

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]


def _delete_among_those_in_flight() -> None:
    from moto.sqs.models import Queue

    moto_delete = Queue.delete_message

    def delete_message(self: Queue, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return
        found = next(
            (m for m in self.pending_messages if m.had_receipt_handle(receipt_handle)), None
        )
        try:
            if found is None:
                raise ValueError(receipt_handle)
            self._messages.remove(found)
        except ValueError:
            # Not in flight, or no longer queued: moto's own answer.
            moto_delete(self, receipt_handle)
            return
        self.pending_messages.discard(found)
        self.deleted_messages.update(found.all_receipt_handles)  # type: ignore[arg-type]

    Queue.delete_message = delete_message  # type: ignore[method-assign]


def _receipt_handles_at_once() -> None:
    """moto's receipt handle (185 random lowercase letters, from moto's own
    seeded random), drawn in one call rather than one call a letter."""
    import moto.sqs.models
    from moto.moto_api._internal import mock_random

    def generate_receipt_handle() -> str:
        return "".join(mock_random.choices(string.ascii_lowercase, k=_RECEIPT_HANDLE_LENGTH))

    moto.sqs.models.generate_receipt_handle = generate_receipt_handle  # type: ignore[attr-defined]
