"""The worker's durable state: the byte codecs of user and item state (:mod:`.codecs`) and the
interface of the user store, with an in-memory one (:mod:`.store`), and the store over the
changelog-backed Faust table that the worker uses (:mod:`.table_store`)."""
