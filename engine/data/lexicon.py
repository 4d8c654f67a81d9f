"""Word lists for the sentence generator.

Every list is ordered: the first entries form the small ``demo`` vocabulary, the rest only appear
in the ``full`` corpus (see ``engine.data.sentences.TIERS``). Nouns carry a semantic class so that
verbs take sensible objects ("cook the soup", never "cook the mountain"): that regularity is what a
language-model-like rescorer (LAS) can learn and an acoustic model alone cannot.
"""

from __future__ import annotations

# Nouns: "singular[/plural]" (plural is regular when omitted), grouped by semantic class.
NOUNS: dict[str, str] = {
    "person": """
        teacher doctor farmer driver student baker nurse painter singer writer
        child/children man/men woman/women boy girl friend neighbour pilot sailor soldier
        lawyer dancer cook waiter player manager engineer artist captain judge
        scientist guard clerk tailor barber butcher gardener hunter fisherman/fishermen
        priest king queen prince princess uncle aunt cousin brother sister
        mother father grandmother grandfather daughter son husband wife/wives baby/babies customer
        visitor stranger merchant miner plumber carpenter reporter actor poet mayor
    """,
    "animal": """
        dog cat horse bird cow sheep/sheep fish/fish rabbit mouse/mice duck
        goat pig fox/foxes wolf/wolves bear lion tiger monkey frog snake
        chicken owl eagle deer/deer whale dolphin camel donkey goose/geese turtle
        squirrel bee spider butterfly/butterflies elephant zebra kitten puppy/puppies parrot crow
    """,
    "food": """
        apple bread cake soup egg orange banana sandwich/sandwiches cookie pie
        potato/potatoes tomato/tomatoes carrot onion lemon cherry/cherries peach/peaches pear grape melon
        cheese/cheeses biscuit muffin pancake salad noodle sausage pizza cucumber pumpkin
        strawberry/strawberries plum cupcake doughnut pastry/pastries turnip radish/radishes walnut almond
    """,
    "thing": """
        book letter box/boxes key bag cup hat coat ball chair
        table lamp clock watch/watches phone pen map ticket bottle basket
        window door picture camera shoe glove ring bell knife/knives plate
        blanket candle mirror pillow radio rope shirt spoon umbrella wallet
        bucket hammer ladder needle parcel pencil envelope jacket kettle towel
        violin guitar drum trumpet piano/pianos sword shield helmet compass lantern
        notebook magazine newspaper carpet curtain scarf/scarves feather stamp coin
    """,
    "place": """
        house school park market garden kitchen station library office village
        city/cities river beach forest farm shop church hospital bridge castle
        museum harbour island lake mountain valley desert airport factory hotel
        bakery/bakeries palace stadium theatre tower cottage barn cave meadow orchard
    """,
    "vehicle": """
        car bus/buses train boat bike truck ship plane taxi/taxis tractor
        wagon van scooter canoe helicopter
    """,
}

# Verbs: "base past participle ing" (participle "-" means same as past). Each verb says which
# noun classes it takes as object; intransitive verbs take none.
VERBS_TRANSITIVE: list[tuple[str, tuple[str, ...]]] = [
    ("see saw seen seeing", ("person", "animal", "thing", "vehicle", "place")),
    ("find found - finding", ("person", "animal", "thing", "food")),
    ("buy bought - buying", ("thing", "food", "vehicle")),
    ("eat ate eaten eating", ("food",)),
    ("want wanted - wanting", ("thing", "food", "vehicle")),
    ("like liked - liking", ("person", "animal", "food", "thing", "place")),
    ("help helped - helping", ("person",)),
    ("visit visited - visiting", ("person", "place")),
    ("carry carried - carrying", ("thing", "food", "animal")),
    ("call called - calling", ("person", "animal")),
    ("sell sold - selling", ("thing", "food", "vehicle", "animal")),
    ("cook cooked - cooking", ("food",)),
    ("clean cleaned - cleaning", ("thing", "place", "vehicle")),
    ("open opened - opening", ("thing",)),
    ("drive drove driven driving", ("vehicle",)),
    ("meet met - meeting", ("person",)),
    ("watch watched - watching", ("person", "animal", "vehicle")),
    ("lose lost - losing", ("thing",)),
    ("bring brought - bringing", ("thing", "food")),
    ("paint painted - painting", ("thing", "place", "vehicle")),
    ("feed fed - feeding", ("animal", "person")),
    ("catch caught - catching", ("animal", "thing")),
    ("read read - reading", ("thing",)),
    ("make made - making", ("food", "thing")),
    ("take took taken taking", ("thing", "food", "vehicle")),
    ("give gave given giving", ("thing", "food")),
    ("hold held - holding", ("thing", "animal")),
    ("leave left - leaving", ("place", "thing")),
    ("follow followed - following", ("person", "animal", "vehicle")),
    ("wash washed - washing", ("thing", "vehicle", "animal", "food")),
    ("fix fixed - fixing", ("thing", "vehicle")),
    ("borrow borrowed - borrowing", ("thing", "vehicle")),
    ("build built - building", ("place", "thing", "vehicle")),
    ("break broke broken breaking", ("thing",)),
    ("hide hid hidden hiding", ("thing", "food", "animal")),
    ("keep kept - keeping", ("thing", "animal")),
    ("send sent - sending", ("thing", "food")),
    ("drop dropped - dropping", ("thing", "food")),
    ("pack packed - packing", ("thing", "food")),
    ("chase chased - chasing", ("animal", "person", "vehicle")),
    ("greet greeted - greeting", ("person",)),
    ("thank thanked - thanking", ("person",)),
    ("admire admired - admiring", ("person", "animal", "thing", "place")),
    ("slice sliced - slicing", ("food",)),
    ("bake baked - baking", ("food",)),
    ("peel peeled - peeling", ("food",)),
    ("taste tasted - tasting", ("food",)),
    ("weigh weighed - weighing", ("food", "thing", "animal")),
    ("deliver delivered - delivering", ("thing", "food")),
    ("repair repaired - repairing", ("thing", "vehicle", "place")),
    ("steal stole stolen stealing", ("thing", "food", "vehicle")),
    ("guard guarded - guarding", ("place", "thing", "person")),
    ("examine examined - examining", ("person", "animal", "thing")),
    ("photograph photographed - photographing", ("person", "animal", "place", "vehicle")),
    ("describe described - describing", ("person", "animal", "thing", "place")),
    ("remember remembered - remembering", ("person", "place", "thing")),
    ("forget forgot forgotten forgetting", ("thing", "person")),
    ("wrap wrapped - wrapping", ("thing", "food")),
    ("polish polished - polishing", ("thing", "vehicle")),
    ("inspect inspected - inspecting", ("thing", "vehicle", "place")),
    ("rescue rescued - rescuing", ("person", "animal")),
    ("protect protected - protecting", ("person", "animal", "place")),
    ("ride rode ridden riding", ("animal", "vehicle")),
    ("order ordered - ordering", ("food", "thing")),
    ("throw threw thrown throwing", ("thing", "food")),
    ("pick picked - picking", ("food", "thing")),
    ("share shared - sharing", ("food", "thing")),
    ("measure measured - measuring", ("thing", "place")),
    ("count counted - counting", ("animal", "thing", "food")),
    ("collect collected - collecting", ("thing", "food")),
    ("choose chose chosen choosing", ("thing", "food", "vehicle", "place")),
    ("draw drew drawn drawing", ("person", "animal", "thing", "place")),
    ("push pushed - pushing", ("thing", "vehicle")),
    ("pull pulled - pulling", ("thing", "vehicle")),
    ("lift lifted - lifting", ("thing", "animal")),
    ("fold folded - folding", ("thing",)),
    ("hang hung - hanging", ("thing",)),
    ("fill filled - filling", ("thing",)),
    ("warn warned - warning", ("person",)),
    ("invite invited - inviting", ("person",)),
    ("teach taught - teaching", ("person",)),
    ("trust trusted - trusting", ("person",)),
    ("hire hired - hiring", ("person",)),
    ("scare scared - scaring", ("person", "animal")),
    ("wake woke woken waking", ("person", "animal")),
    ("answer answered - answering", ("person", "thing")),
    ("return returned - returning", ("thing", "vehicle")),
    ("rent rented - renting", ("vehicle", "place", "thing")),
    ("load loaded - loading", ("vehicle",)),
    ("park parked - parking", ("vehicle",)),
    ("sketch sketched - sketching", ("person", "animal", "place")),
    ("decorate decorated - decorating", ("place", "thing", "food")),
    ("heat heated - heating", ("food", "thing")),
    ("freeze froze frozen freezing", ("food",)),
    ("boil boiled - boiling", ("food",)),
    ("mend mended - mending", ("thing",)),
    ("tie tied - tying", ("thing", "animal")),
]

VERBS_INTRANSITIVE: list[str] = [
    "sleep slept - sleeping", "run ran run running", "walk walked - walking",
    "sing sang sung singing", "laugh laughed - laughing", "wait waited - waiting",
    "work worked - working", "play played - playing", "swim swam swum swimming",
    "dance danced - dancing", "smile smiled - smiling", "cry cried - crying",
    "arrive arrived - arriving", "listen listened - listening", "rest rested - resting",
    "shout shouted - shouting", "whisper whispered - whispering", "travel travelled - travelling",
    "fall fell fallen falling", "climb climbed - climbing", "jump jumped - jumping",
    "study studied - studying", "cough coughed - coughing", "sneeze sneezed - sneezing",
    "wander wandered - wandering", "hurry hurried - hurrying", "complain complained - complaining",
    "disappear disappeared - disappearing", "shiver shivered - shivering", "yawn yawned - yawning",
    "kneel knelt - kneeling", "stumble stumbled - stumbling", "relax relaxed - relaxing",
]

ADJECTIVES = """
    big small old young happy tall short red blue green
    little new good bad hot cold long quiet kind busy
    brown white black yellow clean dirty heavy light soft hard
    strange lucky angry tired hungry brave clever gentle proud rich
    poor famous friendly lonely noisy patient polite rude shy sleepy
    empty broken dusty shiny wooden golden silver round square tiny
    huge narrow wide fresh ripe sweet sour bitter salty spicy
    warm cool wet dry loud calm careful curious eager fierce
    honest jolly modest nervous serious silly smart wise wild wealthy
    pale purple orange pink grey crooked fancy plain precious rusty
"""

ADVERBS = """
    quickly slowly quietly loudly carefully happily sadly early late often
    suddenly gently politely proudly eagerly calmly nervously patiently rarely bravely
"""

NAMES = """
    anna john mary peter lucy tom sarah david emma james
    alice robert helen george laura william kate henry susan paul
    oliver sophie daniel grace michael rachel edward julia thomas clara
    victor nina oscar rose simon ella arthur irene frank diana
    harold molly walter ruth samuel ivy albert norah felix hazel
    martin agnes leonard beatrice hugo violet ralph maud jasper flora
    gordon edith stanley mabel rupert doris cedric esther wilfred gloria
"""

PLACES_PROPER = """
    london paris boston chicago berlin madrid dublin denver seattle toronto
    vienna lisbon sydney cairo oslo rome athens prague warsaw geneva
    houston phoenix dallas atlanta glasgow bristol leeds york belfast cardiff
"""

MONTHS = "january february march april may june july august september october november december"
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday"

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINALS = """first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth
fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth""".split()
